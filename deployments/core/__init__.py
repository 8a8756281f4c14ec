"""What every deployment shares: settings, the state store, storage, the messages between stages,
handles, telemetry, metrics and logging. Nothing here imports a stage or the gateway."""
