"""Operations: lifecycle events for listeners, OpenTelemetry spans and metrics."""
