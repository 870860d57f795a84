package catalog

import (
	"context"

	"hone/store"
)

// List returns every version of every registered model, with aliases,
// ordered by catalog, schema, model and version.
func (c *Catalog) List(ctx context.Context) ([]store.ModelVersion, error) {
	cats, err := c.st.ListCatalogs(ctx)
	if err != nil {
		return nil, err
	}
	var out []store.ModelVersion
	for _, cat := range cats {
		schemas, err := c.st.ListSchemas(ctx, cat.Name)
		if err != nil {
			return nil, err
		}
		for _, sc := range schemas {
			models, err := c.st.ListModels(ctx, cat.Name, sc.Name)
			if err != nil {
				return nil, err
			}
			for _, m := range models {
				vs, err := c.st.ListModelVersions(ctx, cat.Name, sc.Name, m.Name)
				if err != nil {
					return nil, err
				}
				out = append(out, vs...)
			}
		}
	}
	return out, nil
}
