package api

import (
	"encoding/json"
	"math"
	"testing"
)

// AppendJSON writes exactly what encoding/json does, for base64 chunks and
// for anything else (which it hands to encoding/json).
func TestStreamChunkAppendJSON(t *testing.T) {
	cases := []StreamChunk{
		{},
		{EncryptedChunk: "AQIDBA==", Seq: 0},
		{EncryptedChunk: "AQID-_x+/w", Seq: 7, Final: true},
		{EncryptedChunk: "", Seq: math.MaxUint64, Final: true},
		{EncryptedChunk: `a"b\c`, Seq: 1},
		{EncryptedChunk: "<script>&\u2028\x00", Seq: 2},
		{EncryptedChunk: "é", Seq: 3},
		{EncryptedChunk: "ab\xff", Seq: 4},
	}
	for _, c := range cases {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.AppendJSON([]byte("x")); string(got) != "x"+string(want) {
			t.Errorf("%+v: AppendJSON = %s; json.Marshal = %s", c, got[1:], want)
		}
	}
}

func FuzzStreamChunkAppendJSON(f *testing.F) {
	f.Add("AQIDBA==", uint64(3), true)
	f.Add(`"\`, uint64(0), false)
	f.Fuzz(func(t *testing.T, s string, seq uint64, final bool) {
		c := StreamChunk{EncryptedChunk: s, Seq: seq, Final: final}
		want, _ := json.Marshal(c)
		if got := c.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON = %s; json.Marshal = %s", got, want)
		}
	})
}
