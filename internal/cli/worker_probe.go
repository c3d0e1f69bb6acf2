package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// probeResult is what 'polydev worker probe NAME' prints: whether the
// attempted action was allowed, and what happened.
type probeResult struct {
	Probe   string `json:"probe"`
	Allowed bool   `json:"allowed"`
	Detail  string `json:"detail,omitempty"`
}

// runProbe tries one thing a sandboxed worker must not be able to do (or,
// for "whoami", "ls", "write_tmp" and "sleep", reports on the sandbox) and
// prints the outcome as JSON. Tests run it inside a container with runc exec
// and count the probes; it is not for other use.
func runProbe(_ context.Context, e env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("probe: name required")
	}
	name, arg := args[0], ""
	if len(args) > 1 {
		arg = args[1]
	}
	r := probeResult{Probe: name}
	try := func(err error) {
		r.Allowed = err == nil
		if err != nil {
			r.Detail = err.Error()
		}
	}
	switch name {
	case "mount":
		try(unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m"))
		if r.Allowed {
			_ = unix.Unmount("/tmp", 0)
		}
	case "unshare":
		err := unix.Unshare(unix.CLONE_NEWUSER)
		if err != nil {
			err2 := unix.Unshare(unix.CLONE_NEWNS)
			if err2 == nil {
				err = nil
			} else {
				err = fmt.Errorf("newuser: %v; newns: %v", err, err2)
			}
		}
		try(err)
	case "ptrace":
		pid := 1
		if arg != "" {
			pid, _ = strconv.Atoi(arg)
		}
		err := unix.PtraceAttach(pid)
		if err == nil {
			_ = unix.PtraceDetach(pid)
		}
		try(err)
	case "raw_socket":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		} else if fd2, err2 := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err2 == nil {
			unix.Close(fd2)
			err = nil
		} else {
			err = fmt.Errorf("inet raw: %v; packet: %v", err, err2)
		}
		try(err)
	case "connect":
		c, err := net.DialTimeout("tcp", arg, 2*time.Second)
		if err == nil {
			c.Close()
		}
		try(err)
	case "unix_connect":
		c, err := net.DialTimeout("unix", arg, 2*time.Second)
		if err == nil {
			c.Close()
		}
		try(err)
	case "read":
		_, err := os.ReadFile(arg)
		try(err)
	case "write":
		err := os.WriteFile(arg, []byte("probe"), 0o600)
		if err == nil {
			_ = os.Remove(arg)
		}
		try(err)
	case "write_keep":
		try(os.WriteFile(arg, []byte("probe"), 0o600))
	case "ls":
		ents, err := os.ReadDir(arg)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		try(err)
		r.Detail = strings.Join(names, ",")
	case "memory":
		mib := 512
		if arg != "" {
			mib, _ = strconv.Atoi(arg)
		}
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		r.Allowed = true
		r.Detail = fmt.Sprintf("touched %d MiB", mib)
	case "pids":
		want := 1000
		if arg != "" {
			want, _ = strconv.Atoi(arg)
		}
		self, _ := os.Executable()
		var pids []int
		var err error
		for len(pids) < want {
			var pid int
			pid, err = syscall.ForkExec(self, []string{self, "worker", "probe", "sleep"}, &syscall.ProcAttr{})
			if err != nil {
				break
			}
			pids = append(pids, pid)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, 0, nil)
		}
		try(err)
		r.Detail = fmt.Sprintf("started %d processes; %s", len(pids), r.Detail)
	case "sleep":
		time.Sleep(60 * time.Second)
	case "netifs":
		ifs, err := net.Interfaces()
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		try(err)
		r.Detail = strings.Join(names, ",")
	case "status":
		// Uid, CapEff, NoNewPrivs, Seccomp as the kernel reports them.
		b, err := os.ReadFile("/proc/self/status")
		try(err)
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"} {
				if strings.HasPrefix(l, k) {
					keep = append(keep, strings.Join(strings.Fields(l), " "))
				}
			}
		}
		if m, err := os.ReadFile("/proc/self/uid_map"); err == nil {
			keep = append(keep, "uid_map: "+strings.Join(strings.Fields(string(m)), " "))
		}
		r.Detail = strings.Join(keep, "\n")
	default:
		return fmt.Errorf("probe: unknown probe %q", name)
	}
	return json.NewEncoder(e.stdout).Encode(r)
}
