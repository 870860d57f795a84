package main

import "testing"

// --optimizer lionw sends optimizer.name, and only what was given.
func TestCreateSendsOptimizerName(t *testing.T) {
	m := createBody(t, "--optimizer", "lionw", "--weight-decay", "0.0001")
	opt, _ := m["optimizer"].(map[string]any)
	if opt["name"] != "lionw" || opt["weight_decay"] != 0.0001 || len(opt) != 2 {
		t.Fatalf("hone create --optimizer lionw --weight-decay 0.0001 sent optimizer %v", opt)
	}
	if _, ok := m["learning_rate"]; ok {
		t.Fatalf("hone create --optimizer lionw sent a learning rate %v; the server's LionW default should apply", m["learning_rate"])
	}
}
