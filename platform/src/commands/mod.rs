//! One module per command; each binary's `main` calls the module's `main`.

pub mod fsck;
pub mod mkfs;
pub mod mount;
pub mod s3qladm;
pub mod s3qlcp;
pub mod s3qlctrl;
pub mod s3qllock;
pub mod s3qlrm;
pub mod s3qlstat;
pub mod umount;
pub mod verify;
