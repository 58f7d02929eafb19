"""The device registry: device ids (`registry.ids` generates them; the rule is part of the
wire contract, `paku_iot.protocol`), provisioning, credential rotation and removal
(`registry.devices`), which keep the database, the broker's password file and the devices'
retained topics in step, and the devices' message history (`registry.history`)."""
