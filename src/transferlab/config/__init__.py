"""The config wing: start-up (resolvers, the unknown-key hint), composing a run's config in-process, and what
Hydra configs need beyond plain YAML. It sits right above utils/ and below every other package."""
