package service

import (
	"context"
	"testing"

	"github.com/extranetgw/extranet/pkg/api"
)

// fullRuntime answers every part whoever asks, so the test sees that the
// service, not the runtime's courtesy, keeps them from a sponsor.
type fullRuntime struct{}

func (fullRuntime) Status(bool) api.Status {
	return api.Status{
		Activity: &api.ActivityStatus{Recorded: 1},
		Refusals: &api.RefusalStatus{Refused: 1},
		Alerts:   &api.AlertStatus{Sent: 1},
		Cluster:  &api.ClusterStatus{Name: "gw1", Gateways: []api.ClusterGateway{{Name: "gw1"}, {Name: "gw2"}}},
	}
}

func (fullRuntime) PollStats() error { return nil }

// TestStatusForASponsor: the gateway-wide parts of status (activity and
// refusal counts, alerts, the cluster's make-up) are left out for a caller
// who sees some organisations only, and are there for one who sees all.
func TestStatusForASponsor(t *testing.T) {
	svc, _, db := newTestService(t)
	svc = New(Options{DB: db, Plan: svc.opts.Plan, Runtime: fullRuntime{}})
	all, err := svc.Status(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if all.Activity == nil || all.Refusals == nil || all.Alerts == nil || all.Cluster == nil {
		t.Errorf("status for a caller who sees everything lacks a part: %+v", all)
	}
	some, err := svc.Status(context.Background(), map[string]bool{"acme": true})
	if err != nil {
		t.Fatal(err)
	}
	if some.Activity != nil || some.Refusals != nil || some.Alerts != nil || some.Cluster != nil {
		t.Errorf("a sponsor's status shows gateway-wide parts: %+v", some)
	}
}
