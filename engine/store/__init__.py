"""Event stores: one async interface (`base.EventStore`), memory/sqlite/postgres backends."""
