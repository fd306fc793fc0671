"""End-to-end pipelines composed from the stage commands: `sutra demo` and `sutra compare`."""
