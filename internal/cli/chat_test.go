package cli

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestChatHelpAndUsage(t *testing.T) {
	t.Setenv("POLYDEV_CONFIG_DIR", t.TempDir())
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help", "chat"}, 0, "trust-runtime", ""},
		{[]string{"help"}, 0, "chat", ""},
		{[]string{"chat"}, 2, "", "Usage: polydev chat <command>"},
		{[]string{"chat", "nope"}, 2, "", `unknown command "nope"`},
		{[]string{"chat", "send", "-h"}, 0, "", "-temperature"},
		{[]string{"chat", "new", "extra"}, 2, "", "unexpected arguments: extra"},
		{[]string{"chat", "show"}, 2, "", "missing arguments"},
		{[]string{"chat", "show", "a", "b"}, 2, "", "unexpected arguments: b"},
		{[]string{"chat", "new", "--provider", "acme"}, 1, "", `unknown provider "acme": want openai, anthropic or google`},
		{[]string{"chat", "ls"}, 1, "", "not logged in: run polydev account login"},
		{[]string{"chat", "rm", "x"}, 1, "", "not logged in: run polydev account login"},
	} {
		code, out, errOut := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.errOut) {
			t.Errorf("polydev %q: got code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
				tc.args, code, out, errOut, tc.code, tc.out, tc.errOut)
		}
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args     []string
		pos      []string
		model, v string
		err      error
	}{
		{[]string{"id", "a prompt"}, []string{"id", "a prompt"}, "", "false", nil},
		{[]string{"--model", "m", "id", "p"}, []string{"id", "p"}, "m", "false", nil},
		{[]string{"id", "--model", "m", "p", "-v"}, []string{"id", "p"}, "m", "true", nil},
		{[]string{"id", "--", "-v", "--model"}, []string{"id", "-v", "--model"}, "", "false", nil},
		{[]string{"id", "--bogus"}, nil, "", "", errUsage},
		{[]string{}, nil, "", "", errUsage},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		model, v := fs.String("model", "", ""), fs.Bool("v", false, "")
		pos, err := parseArgs(fs, tc.args, 1, -1)
		if !errors.Is(err, tc.err) || tc.err == nil && (!reflect.DeepEqual(pos, tc.pos) || *model != tc.model || fs.Lookup("v").Value.String() != tc.v) {
			t.Errorf("parseArgs(%q): got %q, model %q, v %v, %v; want %q, %q, %s, %v", tc.args, pos, *model, *v, err, tc.pos, tc.model, tc.v, tc.err)
		}
	}
}
