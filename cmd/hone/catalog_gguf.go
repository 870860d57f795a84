package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// catalogRegisterGGUFCmd registers a quantized GGUF file as a version.
func catalogRegisterGGUFCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "register-gguf CATALOG.SCHEMA.MODEL FILE.gguf",
		Short: "Register a GGUF file from hone export as the model's next version, served from its quantized weights",
		Long: `FILE.gguf is a path on the server, under its data roots. The version holds the file and its
unpacked config, tokenizer and weights; hone serve decodes it from the file's Q8_0, Q4_K, Q5_K and Q6_K
matrices without an fp32 copy of them.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			m, err := c.RegisterGGUF(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if n := len(m.Versions); n > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%d\n", args[0], m.Versions[n-1].Version)
			}
			return nil
		},
	}
}
