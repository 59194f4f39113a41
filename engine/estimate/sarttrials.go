package estimate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
)

// SARTTrials is the window of recent SART trials.
//
// Like RRBuffer it is stored as one base64 string, three bytes per trial
// (the digit and whether it was answered, then the reaction time in tenths
// of a millisecond): a hundred trial objects were most of a record's
// encoding. Reaction times are kept at that precision (roundRT) from the
// moment they arrive, so a record reads back exactly as it was. Records
// written with the array form still read.
type SARTTrials []SARTTrial

// sartTrialBytes is the stored size of one trial.
const sartTrialBytes = 3

// roundRT is the precision reaction times are kept at: 0.1 ms.
func roundRT(ms float64) float64 { return math.Round(ms*10) / 10 }

// MarshalJSON implements json.Marshaler.
func (t SARTTrials) MarshalJSON() ([]byte, error) {
	raw := make([]byte, sartTrialBytes*len(t))
	for i, trial := range t {
		if trial.Digit < 0 || trial.Digit > 9 || trial.RTms < 0 || trial.RTms*10 > math.MaxUint16 {
			return nil, fmt.Errorf("sart: trial %d out of range (%+v)", i, trial)
		}
		head := byte(trial.Digit)
		if trial.Responded {
			head |= 0x10
		}
		raw[sartTrialBytes*i] = head
		binary.LittleEndian.PutUint16(raw[sartTrialBytes*i+1:], uint16(math.Round(trial.RTms*10)))
	}
	return packedJSON(raw), nil
}

// UnmarshalJSON implements json.Unmarshaler: a base64 string, or the
// array of trial objects older records hold.
func (t *SARTTrials) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '[' {
		var trials []SARTTrial
		if err := json.Unmarshal(data, &trials); err != nil {
			return fmt.Errorf("sart: %w", err)
		}
		*t = trials
		return nil
	}
	raw, err := unpackJSON(data)
	if err != nil {
		return fmt.Errorf("sart: %w", err)
	}
	if len(raw)%sartTrialBytes != 0 {
		return fmt.Errorf("sart: %d bytes is not a whole number of trials", len(raw))
	}
	*t = make(SARTTrials, len(raw)/sartTrialBytes)
	for i := range *t {
		head := raw[sartTrialBytes*i]
		if head&0x0F > 9 || head&0xE0 != 0 {
			return fmt.Errorf("sart: trial %d is malformed", i)
		}
		(*t)[i] = SARTTrial{
			Digit:     int(head & 0x0F),
			Responded: head&0x10 != 0,
			RTms:      float64(binary.LittleEndian.Uint16(raw[sartTrialBytes*i+1:])) / 10,
		}
	}
	return nil
}
