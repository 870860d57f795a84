package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"hone/catalog"
	"hone/client"
)

// honeHome is the state directory: home, else $HONE_HOME, else ~/.hone.
func honeHome(home string) (string, error) {
	if home == "" {
		home = os.Getenv("HONE_HOME")
	}
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --home, no HONE_HOME and no home directory: %w", err)
		}
		home = filepath.Join(h, ".hone")
	}
	return home, nil
}

// localVolumePath resolves a /Volumes/... path against the volumes of the
// local state directory, for the data commands, which run without a
// server; other paths are returned as they are.
func localVolumePath(p string) (string, error) {
	if !catalog.IsVolumePath(p) {
		return p, nil
	}
	home, err := honeHome("")
	if err != nil {
		return "", err
	}
	return catalog.VolumeFile(filepath.Join(home, "catalog"), p)
}

// catalogCreateVolumeCmd is `hone catalog create-volume`.
func catalogCreateVolumeCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "create-volume CATALOG.SCHEMA.VOLUME",
		Short: "Create a volume: a managed folder for data, addressed as /Volumes/<catalog>/<schema>/<volume>/",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if _, err := c.CreateVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "/Volumes/%s/\n", strings.ReplaceAll(args[0], ".", "/"))
			return nil
		},
	}
}

func volumeCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "volume", Short: "Put files into catalog volumes and list them (through the API)"}
	cf.register(cmd)
	cmd.AddCommand(volumeCpCmd(&cf), volumeLsCmd(&cf))
	return cmd
}

func volumeCpCmd(cf *clientFlags) *cobra.Command {
	var recursive bool
	cp := &cobra.Command{
		Use:   "cp LOCAL /Volumes/CATALOG/SCHEMA/VOLUME/PATH",
		Short: "Upload a file, or with -r a folder (a Delta table, a Hugging Face dataset), into a volume",
		Long: `Uploads LOCAL to the volume path. A destination ending in / receives the file under its own name.
With -r, LOCAL is a folder copied file by file to the destination folder, keeping its layout.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			src, dst := args[0], args[1]
			up := func(local, remote string) error {
				f, err := os.Open(local)
				if err != nil {
					return err
				}
				defer f.Close()
				e, err := c.PutFile(cmd.Context(), remote, f)
				if err != nil {
					return fmt.Errorf("%s: %w", local, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %d bytes\n", e.Path, e.Size)
				return nil
			}
			if !recursive {
				if strings.HasSuffix(dst, "/") {
					dst += filepath.Base(src)
				}
				return up(src, dst)
			}
			return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if !d.Type().IsRegular() {
					return fmt.Errorf("%s: not a regular file (links are not copied)", p)
				}
				rel, err := filepath.Rel(src, p)
				if err != nil {
					return err
				}
				return up(p, path.Join(dst, filepath.ToSlash(rel)))
			})
		},
	}
	cp.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy a folder")
	return cp
}

func volumeLsCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls /Volumes/CATALOG/SCHEMA/VOLUME[/PATH]",
		Short: "List a volume folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			es, err := c.ListVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), client.VolumeListing{Entries: es})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SIZE\tMODIFIED\tPATH")
			for _, e := range es {
				p := e.Path
				if e.IsDir {
					p += "/"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\n", e.Size, e.Modified.Format("2006-01-02 15:04:05"), p)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return ls
}
