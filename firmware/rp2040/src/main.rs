//! starmind on the Raspberry Pi Pico: boot, find the model in flash, then bench, tell stories or
//! answer prompts over serial. The model logic, the config block and the story loop are the
//! `starmind-engine` crate; this file and `app.rs` are board plumbing. Flash map:
//! docs/memory-map.md.
#![no_std]
#![no_main]

mod app;
mod console;
mod cores;
mod measure;
mod stream;

use core::fmt::Write as _;

use fugit::RateExtU32 as _;
use rp2040_hal as hal;

use hal::{clocks::Clock as _, pac};

/// Second-stage bootloader for the Pico's W25Q080 flash (the bootrom copies it to RAM and runs it).
#[link_section = ".boot2"]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

const XTAL_HZ: u32 = 12_000_000;

#[hal::entry]
fn main() -> ! {
    measure::paint_stack();
    let mut pac = pac::Peripherals::take().unwrap();
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let clocks = hal::clocks::init_clocks_and_plls(
        XTAL_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    )
    .ok()
    .unwrap();

    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let uart_pins = (pins.gpio0.into_function(), pins.gpio1.into_function());
    let uart_config = hal::uart::UartConfig::new(
        115_200.Hz(),
        hal::uart::DataBits::Eight,
        None,
        hal::uart::StopBits::One,
    );
    let uart = hal::uart::UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS)
        .enable(uart_config, clocks.peripheral_clock.freq())
        .unwrap();
    let mut console = console::Console::new(uart);

    let clk_sys_hz = clocks.system_clock.freq().to_Hz();
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);
    let clock = measure::CycleClock::new(timer, clk_sys_hz);

    let usb_bus =
        cortex_m::singleton!(: usb_device::class_prelude::UsbBusAllocator<hal::usb::UsbBus> =
        usb_device::class_prelude::UsbBusAllocator::new(hal::usb::UsbBus::new(
            pac.USBCTRL_REGS,
            pac.USBCTRL_DPRAM,
            clocks.usb_clock,
            true,
            &mut pac.RESETS,
        )))
        .unwrap();
    console.start_usb(usb_bus);
    let _ = writeln!(console, "STARMIND-BOOT v1 clock_hz={clk_sys_hz}\r");

    app::run(&mut console, &clock, clk_sys_hz)
}

/// Prints the faulting PC on UART0 (the emulator driver and the host look for this line), then
/// stops.
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    let _ = writeln!(
        console::RawUart,
        "\r\nSTARMIND-FAULT hardfault pc={:#010x} lr={:#010x}\r",
        frame.pc(),
        frame.lr()
    );
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    cortex_m::interrupt::disable();
    let _ = writeln!(console::RawUart, "\r\nSTARMIND-FAULT panic {info}\r");
    loop {
        cortex_m::asm::wfi();
    }
}
