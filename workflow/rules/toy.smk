# toy experiment rules (filled in by the toy section).
