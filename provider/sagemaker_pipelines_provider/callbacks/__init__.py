"""The pure pieces of callback handling: message parsing and routing, the visibility lease, token
liveness, the reconciler. How they fit together: ``docs/callbacks.md``."""
