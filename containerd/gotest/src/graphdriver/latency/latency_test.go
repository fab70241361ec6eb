// Snapshot latency through containerd, as its clients see it: Prepare (with Mounts), Commit
// and Remove on snapshotters named in GRAPHDRIVER_LATENCY_PAIRS ("a=b,c=d": each pair is
// measured in alternation, op by op, so the machine's noise falls on both), each on top of
// the committed snapshot with a parent that an image import left (the image's top layer).
// Talks to containerd's snapshot service over its socket (GRAPHDRIVER_LATENCY_ADDRESS), in
// namespace "graphdriver": for a built-in snapshotter containerd serves it in-process, for
// graphdriver it forwards to the proxy plugin. Prints one JSON line per snapshotter and
// operation: {"snapshotter", "op", "seconds": [...]}. Everything runs under one lease.
// Run by scripts/containerd-bench.sh (GOPATH mode: GO111MODULE=off).
package latency

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

// top is the image's top layer: a committed snapshot with a parent.
func top(ctx context.Context, sn snapshots.Snapshotter) (string, error) {
	var name string
	err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		if i.Kind == snapshots.KindCommitted && i.Parent != "" && name == "" {
			name = i.Name
		}
		return nil
	})
	if err == nil && name == "" {
		err = fmt.Errorf("no committed snapshot with a parent: import an image of two layers first")
	}
	return name, err
}

type series struct {
	Snapshotter string    `json:"snapshotter"`
	Op          string    `json:"op"`
	Seconds     []float64 `json:"seconds"`
}

func TestLatency(t *testing.T) {
	addr := os.Getenv("GRAPHDRIVER_LATENCY_ADDRESS")
	pairs := os.Getenv("GRAPHDRIVER_LATENCY_PAIRS")
	n, _ := strconv.Atoi(os.Getenv("GRAPHDRIVER_LATENCY_N"))
	if addr == "" || pairs == "" || n < 1 {
		t.Skip("set GRAPHDRIVER_LATENCY_ADDRESS, GRAPHDRIVER_LATENCY_PAIRS and GRAPHDRIVER_LATENCY_N")
	}
	dialer := func(ctx context.Context, a string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", a)
	}
	ctx := namespaces.WithNamespace(context.Background(), "graphdriver")
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithContextDialer(dialer), grpc.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// under a lease, as containerd's clients work: containerd's garbage collector removes
	// committed snapshots nothing references
	lm := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn))
	lease, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Delete(ctx, lease, leases.SynchronousDelete)
	ctx = leases.WithLease(ctx, lease.ID)
	client := snapshotsapi.NewSnapshotsClient(conn)
	for _, pair := range strings.Split(pairs, ",") {
		names := strings.Split(pair, "=")
		sns := make([]snapshots.Snapshotter, len(names))
		parents := make([]string, len(names))
		out := map[string]*series{}
		for i, name := range names {
			sns[i] = proxy.NewSnapshotter(client, name)
			if parents[i], err = top(ctx, sns[i]); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, op := range []string{"prepare", "commit", "remove"} {
				out[name+" "+op] = &series{Snapshotter: name, Op: op}
			}
		}
		timed := func(name, op string, f func() error) {
			start := time.Now()
			if err := f(); err != nil {
				t.Fatalf("%s %s: %v", name, op, err)
			}
			s := out[name+" "+op]
			s.Seconds = append(s.Seconds, time.Since(start).Seconds())
		}
		// one warm-up round, then n measured ones
		for round := -1; round < n; round++ {
			for i, name := range names {
				sn, key, commit := sns[i], fmt.Sprintf("latency-%d", round), fmt.Sprintf("latency-commit-%d", round)
				record := func(op string, f func() error) {
					if round < 0 {
						if err := f(); err != nil {
							t.Fatalf("%s %s (warm-up): %v", name, op, err)
						}
						return
					}
					timed(name, op, f)
				}
				record("prepare", func() error {
					if _, err := sn.Prepare(ctx, key, parents[i]); err != nil {
						return err
					}
					_, err := sn.Mounts(ctx, key)
					return err
				})
				record("commit", func() error { return sn.Commit(ctx, commit, key) })
				record("remove", func() error { return sn.Remove(ctx, commit) })
			}
		}
		enc := json.NewEncoder(os.Stdout)
		for _, name := range names {
			for _, op := range []string{"prepare", "commit", "remove"} {
				enc.Encode(out[name+" "+op])
			}
		}
	}
}
