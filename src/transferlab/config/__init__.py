"""The config wing: what Hydra configs need beyond plain YAML (resolvers), kept below every other package."""
