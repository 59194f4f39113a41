package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestRecordEncodingMatchesEncodingJSON: records are written with go-json;
// files written with encoding/json (and anything reading the files with
// it) must see exactly the same records.
func TestRecordEncodingMatchesEncodingJSON(t *testing.T) {
	svc, db := newService(t, openBolt(store.WithoutSync()))
	ctx := context.Background()
	consentAll(t, svc, 80) // realisticBatch(i) covers users 20i … 20i+19
	for i := range 4 {
		batch, err := telemetry.DecodeBatch(bytes.NewReader(realisticBatch(i)), false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Ingest(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	checked := 0
	err := db.EachUser(ctx, func(_ string, item store.Item) error {
		var std, fast service.Record
		if err := json.Unmarshal(item.Value, &std); err != nil {
			return err
		}
		if err := gojson.Unmarshal(item.Value, &fast); err != nil {
			return err
		}
		if !reflect.DeepEqual(std, fast) {
			t.Errorf("go-json and encoding/json read a stored record differently:\n%+v\n%+v", std, fast)
		}
		legacy, err := json.Marshal(std)
		if err != nil {
			return err
		}
		var back service.Record
		if err := gojson.Unmarshal(legacy, &back); err != nil {
			return err
		}
		if !reflect.DeepEqual(std, back) {
			t.Errorf("a record written by encoding/json reads back differently")
		}
		if again, _ := gojson.Marshal(back); !bytes.Equal(again, legacy) {
			t.Errorf("go-json and encoding/json write different JSON:\n%s\n%s", again, legacy)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no records")
	}
}
