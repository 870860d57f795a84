package engine

// ReplayedLayers are the layers a training pass runs forward a second
// time in its backward pass to rebuild the residual streams of residual
// checkpoints (Options.CheckpointEvery, checkpoint.go), in the order it
// runs them, and whether it embeds the batch again (the first segment's
// stream). A sharded model gathers each of them once more: the scaling
// model (bench.StepTraffic) counts those gathers from this.
func (o Options) ReplayedLayers(c *Config) (layers []int, embed bool) {
	p, ok := o.residualPlan(c)
	if !ok {
		return nil, false
	}
	for j := len(p.ends) - 1; j >= 1; j-- {
		for l := p.ends[j-1]; l < p.ends[j]-1; l++ {
			layers = append(layers, l)
		}
	}
	return layers, true
}

// AdapterSize is the number of weights of the adapter lc on this config,
// without allocating it.
func (c *Config) AdapterSize(lc LoRAConfig) (int64, error) { return c.adapterSize(lc) }
