"""Full-ranking evaluation: one ranking core reused by every split, group and diagnostic."""
