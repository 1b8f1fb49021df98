"""Knowledge distillation: the DistillationTeacher callback and its losses."""
