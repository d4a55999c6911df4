"""Restoring and listing backups with nothing but a store and the master key: no service,
no metadata database. Verification is the service's own (``pipeline.reader``): every
manifest's key and MAC, each parent manifest against the digest its child recorded, every
chunk's authentication."""
