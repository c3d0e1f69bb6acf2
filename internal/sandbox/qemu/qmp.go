package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmp is a minimal client of QEMU's machine protocol: one JSON object per
// line; a greeting, then capabilities negotiation, then commands whose
// replies are {"return": ...} or {"error": ...}, interleaved with events.
type qmp struct {
	c  net.Conn
	rd *bufio.Reader
}

// dialQMP connects to the socket, retrying while it does not exist yet,
// and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var c net.Conn
	for {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp dial %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	q := &qmp{c: c, rd: bufio.NewReader(c)}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var greet struct {
		QMP json.RawMessage `json:"QMP"`
	}
	line, err := q.rd.ReadBytes('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		c.Close()
		return nil, fmt.Errorf("qmp greeting: unexpected %q", line)
	}
	if _, err := q.run("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) Close() error { return q.c.Close() }

// run executes a command and returns its "return" value.
func (q *qmp) run(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: bad reply %q", cmd, line)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		case resp.Return != nil:
			return resp.Return, nil
		default:
			return nil, errors.New("qmp " + cmd + ": empty reply")
		}
	}
}
