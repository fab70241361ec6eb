// containerd's own snapshotter test suite (snapshots/testsuite, from Debian's
// golang-github-containerd-containerd-dev) run against graphdriver's snapshot service, the
// way containerd reaches it: through snapshots/proxy over a unix socket.
//
// Each case gets a fresh service: `graphctl --driver $GRAPHDRIVER_SUITE_DRIVER --root ROOT
// snapshotter --address ROOT/snapshotter.sock`, stopped with SIGTERM at the end. With
// GRAPHDRIVER_SUITE_ZFS_POOL set (zfs, in the VM), each case's layers get a dataset of their
// own on that pool (the service's layer ids restart at every fresh root, so two cases on one
// parent dataset would name the same datasets), destroyed with everything in it at the end.
// Run by scripts/containerd-tests.sh (GOPATH mode: GO111MODULE=off).
package suite

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// unmountBelow detaches every mount under dir, deepest first (what the service held when
// it was stopped; containerd would keep them for running containers).
func unmountBelow(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func newSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	graphctl := os.Getenv("GRAPHCTL")
	driver := os.Getenv("GRAPHDRIVER_SUITE_DRIVER")
	if graphctl == "" || driver == "" {
		return nil, nil, fmt.Errorf("set GRAPHCTL and GRAPHDRIVER_SUITE_DRIVER")
	}
	sock := filepath.Join(root, "snapshotter.sock")
	args := []string{"--driver", driver, "--root", filepath.Join(root, "gd")}
	for _, o := range strings.Fields(os.Getenv("GRAPHDRIVER_SUITE_OPTS")) {
		args = append(args, "--opt", o)
	}
	dataset := ""
	if pool := os.Getenv("GRAPHDRIVER_SUITE_ZFS_POOL"); pool != "" {
		// the suite's root is DIR/root, DIR a fresh temporary directory per case
		dataset = pool + "/" + filepath.Base(filepath.Dir(root))
		if out, err := exec.Command("zfs", "create", "-o", "mountpoint=none", dataset).CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("zfs create %s: %v: %s", dataset, err, out)
		}
		args = append(args, "--opt", "zfs.fsname="+dataset)
	}
	destroy := func() {
		if dataset != "" {
			if out, err := exec.Command("zfs", "destroy", "-R", dataset).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "zfs destroy -R %s: %v: %s\n", dataset, err, out)
			}
		}
	}
	args = append(args, "snapshotter", "--address", sock)
	cmd := exec.Command(graphctl, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		destroy()
		return nil, nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		unmountBelow(root)
		destroy()
	}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("the service did not listen on %s", sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.DialContext(ctx, sock, grpc.WithInsecure(), grpc.WithContextDialer(dialer), grpc.WithBlock())
	if err != nil {
		stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "graphdriver")
	return sn, func() error {
		err := sn.Close()
		conn.Close()
		stop()
		return err
	}, nil
}

func TestContainerdSnapshotterSuite(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	testsuite.SnapshotterSuite(t, "graphdriver-"+os.Getenv("GRAPHDRIVER_SUITE_DRIVER"), newSnapshotter)
}
