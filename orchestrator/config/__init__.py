"""The sweep configuration: the schema, loading a YAML file with overrides, the rules that span fields, and the pre-flight checks of data, model and storage."""
