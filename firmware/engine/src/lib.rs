//! starmind engine: placeholder, replaced by the engine work.
#![no_std]
