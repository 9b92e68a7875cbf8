"""Scoring a project's pool: the math from one model pass (:mod:`.pool`), writing it into Label
Studio (:mod:`.publish`), and the scores kept on disk (:mod:`.store`)."""
