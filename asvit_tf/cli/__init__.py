"""absl-flags command lines: `asvit <command> [flags]` (see `asvit --help`)."""
