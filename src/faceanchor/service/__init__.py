"""The durable queue, its workers, webhooks and safe URL fetching; depends on the engine protocol only."""
