package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"hone/client"
)

func catalogCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "catalog", Short: "Manage the model catalog (catalog.schema.model)"}
	cf.register(cmd)
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a catalog (main) or a schema (main.demo)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			comment, _ := cmd.Flags().GetString("comment")
			return c.CreateCatalog(cmd.Context(), args[0], comment)
		},
	}
	create.Flags().String("comment", "", "description")
	alias := &cobra.Command{
		Use:   "alias CATALOG.SCHEMA.MODEL VERSION ALIAS",
		Short: "Point an alias (e.g. champion) at a version",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("version %q: want a number", args[1])
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			_, err = c.SetAlias(cmd.Context(), args[0], v, args[2])
			return err
		},
	}
	unalias := &cobra.Command{
		Use:   "unalias CATALOG.SCHEMA.MODEL ALIAS",
		Short: "Remove an alias",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			return c.RemoveAlias(cmd.Context(), args[0], args[1])
		},
	}
	cmd.AddCommand(create, catalogShowCmd(&cf), alias, unalias, catalogModelsCmd(&cf), catalogCreateVolumeCmd(&cf), catalogRegisterGGUFCmd(&cf))
	return cmd
}

func catalogShowCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show CATALOG.SCHEMA.MODEL",
		Short: "Show a model's versions, lineage and aliases",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			m, err := c.ShowModel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tALIASES\tRUN\tBASE MODEL\tLICENSE\tLOCATION")
			for _, v := range m.Versions {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", v.Version, strings.Join(v.Aliases, ","), v.Run, v.BaseModel, v.License, v.StorageLocation)
			}
			return tw.Flush()
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return show
}

func catalogModelsCmd(cf *clientFlags) *cobra.Command {
	var modelsJSON bool
	models := &cobra.Command{
		Use:   "models",
		Short: "List the supported base models and their licences",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ms, err := c.SupportedModels(cmd.Context())
			if err != nil {
				return err
			}
			if modelsJSON {
				return printJSON(cmd.OutOrStdout(), append([]client.SupportedModel{}, ms...))
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tCONTEXT\tLICENSE\tNOTES")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", m.Name, m.MaxContext, m.License, m.Notes)
			}
			return tw.Flush()
		},
	}
	models.Flags().BoolVar(&modelsJSON, "json", false, "print JSON")
	return models
}
