//! One module per command; each binary's `main` calls the module's `main`.

pub mod mkfs;
pub mod mount;
pub mod umount;
