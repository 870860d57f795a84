package delta

import (
	"encoding/json"
	"fmt"
)

// schemaField is a field of the Delta schema JSON (schemaString).
type schemaField struct {
	Name     string          `json:"name"`
	Type     json.RawMessage `json:"type"`
	Metadata map[string]any  `json:"metadata"`
}

// schemaType is a nested type: struct, array or map.
type schemaType struct {
	Type        string          `json:"type"`
	Fields      []schemaField   `json:"fields"`
	ElementType json.RawMessage `json:"elementType"`
	ValueType   json.RawMessage `json:"valueType"`
}

// fields parses the table schema, applying column mapping.
func (m *metaDataAction) fields() ([]Field, error) {
	mode := m.Configuration["delta.columnMapping.mode"]
	switch mode {
	case "", "none", "name", "id":
	default:
		return nil, fmt.Errorf("%w: column mapping mode %q", ErrUnsupported, mode)
	}
	mapped := mode == "name" || mode == "id"
	var st schemaType
	if err := json.Unmarshal([]byte(m.SchemaString), &st); err != nil {
		return nil, fmt.Errorf("schemaString: %w", err)
	}
	if st.Type != "struct" {
		return nil, fmt.Errorf("schemaString: the table type is %q, not struct", st.Type)
	}
	return structFields(st.Fields, mapped)
}

func structFields(in []schemaField, mapped bool) ([]Field, error) {
	out := make([]Field, 0, len(in))
	for _, sf := range in {
		f := Field{Name: sf.Name, Physical: sf.Name}
		if mapped {
			// Both name and id mode write the physical names into the
			// Parquet files, so matching by name serves both.
			p, _ := sf.Metadata["delta.columnMapping.physicalName"].(string)
			if p == "" {
				return nil, fmt.Errorf("column %q has no delta.columnMapping.physicalName", sf.Name)
			}
			f.Physical = p
		}
		if err := typeOf(&f, sf.Type, mapped); err != nil {
			return nil, fmt.Errorf("column %q: %w", sf.Name, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// typeOf fills f's type from a schema type: a primitive name or an object.
func typeOf(f *Field, raw json.RawMessage, mapped bool) error {
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		f.Type = name
		return nil
	}
	var st schemaType
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("type: %w", err)
	}
	f.Type = st.Type
	switch st.Type {
	case "struct":
		fs, err := structFields(st.Fields, mapped)
		f.Fields = fs
		return err
	case "array", "map":
		inner := st.ElementType
		if st.Type == "map" {
			inner = st.ValueType
		}
		f.Element = &Field{}
		return typeOf(f.Element, inner, mapped)
	}
	return fmt.Errorf("unknown type %q", st.Type)
}
