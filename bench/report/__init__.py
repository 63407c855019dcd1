"""The report: paper-style tables, figures and REPORT.md from a results store."""
