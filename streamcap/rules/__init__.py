"""Alert rules: caption text in, alarms out."""
