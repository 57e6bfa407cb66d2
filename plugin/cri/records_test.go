package cri

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRecordsHandOutSnapshots(t *testing.T) {
	r := newRecords()
	cfg := &runtimeapi.ContainerConfig{Labels: map[string]string{"a": "1"}}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A new record's decoded config is not set: the records decode it.
	m := &containerMeta{ID: "c1", SandboxID: "p1", Config: raw}
	r.putContainer(m)
	// The writer goes on changing its own copy, as updateContainerMeta's
	// callers do: what readers hold must not change with it.
	m.StartedAt = 5
	m.config = cfg
	m.config.Labels["a"] = "2"
	got, ok := r.container("c1")
	if !ok || got.StartedAt != 0 || got.config.Labels["a"] != "1" {
		t.Fatalf("stored %+v, labels %v", got, got.config.GetLabels())
	}
	r.putContainer(m)
	if got2, _ := r.container("c1"); got2.StartedAt != 5 || got.StartedAt != 0 {
		t.Fatalf("a new put replaced the record (%d) or changed an old snapshot (%d)", got2.StartedAt, got.StartedAt)
	}
	r.putSandbox(&sandboxMeta{ID: "p1"})
	if len(r.allContainers()) != 1 || len(r.allSandboxes()) != 1 {
		t.Fatal("lists")
	}
	r.remove("c1")
	r.remove("p1")
	if _, ok := r.container("c1"); ok || len(r.allSandboxes()) != 0 {
		t.Fatal("removed records are still there")
	}
}

func TestInitTriggers(t *testing.T) {
	var tr initTriggers
	ch := tr.add("p1")
	tr.fire("p2") // another pod's start
	select {
	case <-ch:
		t.Fatal("fired by another pod")
	default:
	}
	tr.fire("p1")
	<-ch
	tr.fire("p1") // a second container's start: nothing waits any more
	ch = tr.add("p3")
	tr.drop("p3")
	tr.fire("p3")
	select {
	case <-ch:
		t.Fatal("a dropped trigger fired")
	default:
	}
}
