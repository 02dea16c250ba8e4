"""Model card (CHILD_DIR/README.md) and run report (RUN_DIR/report.html), from records:
`card.build.write_card` and `write_report`. This file imports nothing: `report_tables`
builds its tables from `card.blocks`, and `card.sections` draws them (an import here of
`build` would make the two import each other)."""
