"""What a run writes: shared wording, the writer, HTML, JUnit, Markdown."""
