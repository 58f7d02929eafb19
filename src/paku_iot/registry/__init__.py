"""The device registry: device ids (`registry.ids`) and provisioning, credential rotation and
removal (`registry.devices`), which keep the database, the broker's password file and the
devices' retained topics in step."""
