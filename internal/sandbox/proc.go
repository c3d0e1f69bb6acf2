package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcessAlive reports whether pid exists and is not a zombie.
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// vmmProcess is a process whose argv carries a manager's marker.
type vmmProcess struct {
	PID int
	ID  string
}

// findVMMs lists live processes whose argv has an argument "polydev-vm-<id>"
// and an argument containing root+"/".
func findVMMs(root string) []vmmProcess {
	ents, _ := os.ReadDir("/proc")
	var out []vmmProcess
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		id, inRoot := "", false
		for _, a := range strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00") {
			if strings.HasPrefix(a, MarkerPrefix) {
				id = strings.TrimPrefix(a, MarkerPrefix)
			}
			if strings.Contains(a, root+"/") {
				inRoot = true
			}
		}
		if id != "" && inRoot && ProcessAlive(pid) {
			out = append(out, vmmProcess{PID: pid, ID: id})
		}
	}
	return out
}

// MarkerPrefix starts every VMM's marker argument.
const MarkerPrefix = "polydev-vm-"
