package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"hone/client"
)

func endpointsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "Serve registered models under endpoint names (the model of /api/generate and /v1 requests)",
		Long: `An endpoint serves a model version (catalog.schema.model/N) or follows an alias
(catalog.schema.model@alias): moving the alias moves the endpoint, and requests already
generating finish on the version they started with. Its name is the model of /api/generate,
/v1/chat/completions and /v1/completions requests.`,
	}
	cf.register(cmd)
	cmd.AddCommand(endpointsCreateCmd(&cf), endpointsListCmd(&cf), endpointsGetCmd(&cf), endpointsDeleteCmd(&cf))
	return cmd
}

func endpointsCreateCmd(cf *clientFlags) *cobra.Command {
	var model string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create NAME --model REF",
		Short: "Create an endpoint serving a version (main.demo.bot/3) or following an alias (main.demo.bot@champion)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			e, err := c.CreateEndpoint(cmd.Context(), client.CreateEndpointRequest{Name: args[0], Model: model})
			if err != nil {
				return err
			}
			return printEndpoint(cmd.OutOrStdout(), e, asJSON)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "catalog.schema.model/N or catalog.schema.model@alias (required)")
	cmd.MarkFlagRequired("model") //nolint:errcheck // the flag exists
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func endpointsListCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List endpoints with their state and the version serving each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			es, err := c.Endpoints(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), es)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tMODEL\tSERVING\tCREATED")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.State, e.Model, e.ServedModel, e.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func endpointsGetCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an endpoint: its model reference, state and the version serving it now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			e, err := c.GetEndpoint(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printEndpoint(cmd.OutOrStdout(), e, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func endpointsDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an endpoint (the model it serves stays in the catalog)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			return c.DeleteEndpoint(cmd.Context(), args[0])
		},
	}
}

func printEndpoint(w io.Writer, e *client.Endpoint, asJSON bool) error {
	if asJSON {
		return printJSON(w, e)
	}
	fmt.Fprintf(w, "name:     %s\nmodel:    %s\nstate:    %s\n", e.Name, e.Model, e.State)
	if e.ServedModel != "" {
		fmt.Fprintf(w, "serving:  %s\n", e.ServedModel)
	}
	if e.StateMessage != "" {
		fmt.Fprintf(w, "reason:   %s\n", e.StateMessage)
	}
	return nil
}
