package catalog

import (
	"context"

	"hone/client"
)

// Tree lists every catalog with its schemas and their models, ordered by
// name; empty catalogs and schemas are included.
func (c *Catalog) Tree(ctx context.Context) (*client.CatalogTree, error) {
	cats, err := c.st.ListCatalogs(ctx)
	if err != nil {
		return nil, err
	}
	out := &client.CatalogTree{Catalogs: make([]client.CatalogNode, 0, len(cats))}
	for _, cat := range cats {
		node := client.CatalogNode{Name: cat.Name, Comment: cat.Comment, Schemas: []client.SchemaNode{}}
		schemas, err := c.st.ListSchemas(ctx, cat.Name)
		if err != nil {
			return nil, err
		}
		for _, sc := range schemas {
			sn := client.SchemaNode{Name: cat.Name + "." + sc.Name, Comment: sc.Comment, Models: []string{}}
			models, err := c.st.ListModels(ctx, cat.Name, sc.Name)
			if err != nil {
				return nil, err
			}
			for _, m := range models {
				sn.Models = append(sn.Models, sn.Name+"."+m.Name)
			}
			node.Schemas = append(node.Schemas, sn)
		}
		out.Catalogs = append(out.Catalogs, node)
	}
	return out, nil
}
