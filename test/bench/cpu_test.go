package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// cpuUse is CPU time in seconds: the API server and etcd that envtest runs
// as this process's children, and this process (the client or operator).
// All three share the machine's cores, so a contender is only faster when
// it makes the three do less work altogether.
type cpuUse struct {
	apiServer, etcd, client float64
}

func (u cpuUse) sub(earlier cpuUse) cpuUse {
	return cpuUse{u.apiServer - earlier.apiServer, u.etcd - earlier.etcd, u.client - earlier.client}
}

func (u cpuUse) total() float64 { return u.apiServer + u.etcd + u.client }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// readCPU samples the CPU time used so far. Without /proc (not Linux) the
// children read as zero.
func readCPU() cpuUse {
	var use cpuUse
	var self syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err == nil {
		use.client = seconds(self.Utime) + seconds(self.Stime)
	}
	entries, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15); comm may hold spaces.
		open, end := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if open < 0 || end < open {
			continue
		}
		comm, fields := string(stat[open+1:end]), strings.Fields(string(stat[end+1:]))
		if len(fields) < 13 || fields[1] != parent {
			continue
		}
		user, _ := strconv.ParseFloat(fields[11], 64)
		system, _ := strconv.ParseFloat(fields[12], 64)
		switch comm {
		case "kube-apiserver":
			use.apiServer += (user + system) / clockTicks
		case "etcd":
			use.etcd += (user + system) / clockTicks
		}
	}
	return use
}

func seconds(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
