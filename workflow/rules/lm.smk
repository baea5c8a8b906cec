# lm experiment rules (filled in by the lm section).
