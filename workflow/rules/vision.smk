# vision experiment rules (filled in by the vision section).
