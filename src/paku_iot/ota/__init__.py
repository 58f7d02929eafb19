"""OTA: firmware releases, the device manifest, signatures and staged rollouts."""
