package settings

// Nodes is a run's default number of workers (ranks).
const Nodes = 1

func init() {
	help["nodes"] = "workers that train the run together, one rank each (data parallel over Gloo); at most the workers that worked the queue recently"
}

// CheckNodes reports a node count below 1 (0 means the default).
func CheckNodes(v int) error {
	if v == 0 {
		return nil
	}
	return CheckCount("nodes", v, 1)
}
