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

// ParseStreamChunk agrees with json.Unmarshal: the canonical form and
// anything else.
func TestParseStreamChunk(t *testing.T) {
	inputs := []string{
		`{"encrypted_chunk":"AQID","seq":0}`,
		`{"encrypted_chunk":"AQID","seq":12,"final":true}`,
		`{"encrypted_chunk":"","seq":18446744073709551615}`,
		`{"encrypted_chunk":"AQID","seq":18446744073709551616}`,
		`{"encrypted_chunk":"AQID","seq":007}`,
		`{"encrypted_chunk":"AQID","seq":1,"final":false}`,
		`{"encrypted_chunk":"AQID","seq":1} `,
		`{"seq":3,"encrypted_chunk":"AQID"}`,
		`{"encrypted_chunk":"A\u0041","seq":1}`,
		`{"encrypted_chunk":"AQID","seq":-1}`,
		`{"encrypted_chunk":"AQID","seq":1.5}`,
		`{"encrypted_chunk":"AQID","seq":1,"final":true}x`,
		`not json`,
		``,
	}
	for _, in := range inputs {
		checkParseStreamChunk(t, []byte(in))
	}
	for _, c := range []StreamChunk{{EncryptedChunk: "AQIDBA==", Seq: 9}, {EncryptedChunk: "x-_", Seq: 0, Final: true}} {
		got, err := ParseStreamChunk(c.AppendJSON(nil))
		if err != nil || got != c {
			t.Errorf("round trip of %+v: %+v, %v", c, got, err)
		}
	}
}

func checkParseStreamChunk(t *testing.T, in []byte) {
	t.Helper()
	var want StreamChunk
	wantErr := json.Unmarshal(in, &want)
	got, err := ParseStreamChunk(in)
	if (err != nil) != (wantErr != nil) || err == nil && got != want {
		t.Errorf("ParseStreamChunk(%q) = %+v, %v; json.Unmarshal gives %+v, %v", in, got, err, want, wantErr)
	}
}

func FuzzParseStreamChunk(f *testing.F) {
	f.Add([]byte(`{"encrypted_chunk":"AQID","seq":12,"final":true}`))
	f.Add([]byte(`{"encrypted_chunk":"AQID","seq":012}`))
	f.Fuzz(func(t *testing.T, in []byte) { checkParseStreamChunk(t, in) })
}
