"""Identity methods as plug-ins: one file per method, one registry (see :mod:`.registry`)."""
