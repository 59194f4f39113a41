package estimate

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// RRBuffer holds the most recent RR intervals in tenths of a millisecond
// (telemetry bounds them to 5 s, so 16 bits suffice).
//
// It is stored as one base64 string of little-endian uint16s, not as a
// JSON array: the buffer holds a few hundred beats and is rewritten with
// its user's record on every batch, so numbers formatted one by one were
// the largest part of encoding a record. Records written with the array
// form still read.
type RRBuffer []uint16

// MarshalJSON implements json.Marshaler.
func (b RRBuffer) MarshalJSON() ([]byte, error) {
	raw := make([]byte, 2*len(b))
	for i, v := range b {
		binary.LittleEndian.PutUint16(raw[2*i:], v)
	}
	return packedJSON(raw), nil
}

// UnmarshalJSON implements json.Unmarshaler: a base64 string, or the
// array of numbers older records hold.
func (b *RRBuffer) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '[' {
		var tenths []int32
		if err := json.Unmarshal(data, &tenths); err != nil {
			return fmt.Errorf("rr: %w", err)
		}
		*b = make(RRBuffer, len(tenths))
		for i, v := range tenths {
			if v < 0 || v > 0xFFFF {
				return fmt.Errorf("rr: %d tenths of a millisecond is out of range", v)
			}
			(*b)[i] = uint16(v)
		}
		return nil
	}
	raw, err := unpackJSON(data)
	if err != nil {
		return fmt.Errorf("rr: %w", err)
	}
	if len(raw)%2 != 0 {
		return errors.New("rr: odd number of bytes")
	}
	*b = make(RRBuffer, len(raw)/2)
	for i := range *b {
		(*b)[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	return nil
}

// packedJSON is raw as a JSON base64 string: the stored form of the
// model's long windows (RRBuffer, SARTTrials).
func packedJSON(raw []byte) []byte {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(raw))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, raw)
	return append(out, '"')
}

// unpackJSON reverses packedJSON.
func unpackJSON(data []byte) ([]byte, error) {
	var encoded string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(encoded)
}
