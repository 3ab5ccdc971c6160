//! Text in and out: UART0 (GP0 TX, GP1 RX, 115200 8N1), USB CDC serial and RTT (read by a debug
//! probe), all at once.
//!
//! USB is serviced from its interrupt and never waited for: where it does not enumerate (no cable,
//! the rp2040js emulator) its output is dropped and the UART carries on. RTT writes what fits in
//! its RAM buffer and never blocks either.

use core::cell::RefCell;
use core::fmt;

use critical_section::Mutex;
use embedded_hal_nb::serial::Read as _;
use rp2040_hal as hal;
use usb_device::class_prelude::UsbBusAllocator;
use usb_device::prelude::*;
use usbd_serial::SerialPort;

use hal::pac::{self, interrupt};

type UartPins = (
    hal::gpio::Pin<hal::gpio::bank0::Gpio0, hal::gpio::FunctionUart, hal::gpio::PullDown>,
    hal::gpio::Pin<hal::gpio::bank0::Gpio1, hal::gpio::FunctionUart, hal::gpio::PullDown>,
);
/// UART0 as configured by `main`.
pub type Uart = hal::uart::UartPeripheral<hal::uart::Enabled, pac::UART0, UartPins>;

struct Usb {
    device: UsbDevice<'static, hal::usb::UsbBus>,
    serial: SerialPort<'static, hal::usb::UsbBus>,
    /// Bytes received over USB that `Console::read_byte` has not taken yet.
    rx: [u8; 64],
    rx_len: usize,
}

static USB: Mutex<RefCell<Option<Usb>>> = Mutex::new(RefCell::new(None));

/// RTT up-channel buffer: holds a whole bench line (512 ids) while no probe is reading.
const RTT_BUFFER_BYTES: usize = 4096;

/// Every output; implements `fmt::Write`.
pub struct Console {
    uart: Uart,
    rtt: rtt_target::UpChannel,
}

impl Console {
    /// Takes the UART and sets up RTT; call [`Console::start_usb`] to add USB CDC.
    pub fn new(uart: Uart) -> Console {
        let channels = rtt_target::rtt_init! {
            up: {
                0: {
                    size: RTT_BUFFER_BYTES,
                    mode: rtt_target::ChannelMode::NoBlockTrim,
                    name: "starmind"
                }
            }
        };
        Console {
            uart,
            rtt: channels.up.0,
        }
    }

    /// Registers the USB CDC serial port and enables its interrupt.
    pub fn start_usb(&mut self, bus: &'static UsbBusAllocator<hal::usb::UsbBus>) {
        let serial = SerialPort::new(bus);
        let device = UsbDeviceBuilder::new(bus, UsbVidPid(0x16c0, 0x27dd))
            .strings(&[StringDescriptors::default()
                .manufacturer("starmind")
                .product("starmind tiny story model")
                .serial_number("STARMIND")])
            .unwrap_or_else(|_| panic!("usb strings"))
            .device_class(usbd_serial::USB_CLASS_CDC)
            .build();
        critical_section::with(|cs| {
            USB.borrow(cs).replace(Some(Usb {
                device,
                serial,
                rx: [0; 64],
                rx_len: 0,
            }));
        });
        // SAFETY: the handler only touches `USB` through the critical-section mutex.
        unsafe { pac::NVIC::unmask(pac::Interrupt::USBCTRL_IRQ) };
    }

    /// Writes to the UART (blocking), RTT, and USB when a host has the port open.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.uart.write_full_blocking(bytes);
        self.rtt.write(bytes);
        let mut rest = bytes;
        // A bounded number of retries: a host that stops reading must not stall generation.
        let mut retries = 20_000u32;
        while !rest.is_empty() && retries > 0 {
            let written = critical_section::with(|cs| {
                let mut usb = USB.borrow(cs).borrow_mut();
                match usb.as_mut() {
                    Some(usb) if usb.serial.dtr() => usb.serial.write(rest).unwrap_or(0),
                    _ => usize::MAX, // nobody listening: drop
                }
            });
            if written == usize::MAX {
                return;
            }
            rest = &rest[written..];
            retries -= 1;
        }
    }

    /// One received byte from the UART or USB, if any.
    pub fn read_byte(&mut self) -> Option<u8> {
        if let Ok(byte) = self.uart.read() {
            return Some(byte);
        }
        critical_section::with(|cs| {
            let mut usb = USB.borrow(cs).borrow_mut();
            let usb = usb.as_mut()?;
            if usb.rx_len == 0 {
                return None;
            }
            let byte = usb.rx[0];
            usb.rx.copy_within(1..usb.rx_len, 0);
            usb.rx_len -= 1;
            Some(byte)
        })
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

#[interrupt]
fn USBCTRL_IRQ() {
    critical_section::with(|cs| {
        let mut usb = USB.borrow(cs).borrow_mut();
        let Some(usb) = usb.as_mut() else { return };
        if usb.device.poll(&mut [&mut usb.serial]) {
            let free = usb.rx.len() - usb.rx_len;
            let mut buf = [0u8; 64];
            if let Ok(count) = usb.serial.read(&mut buf[..free]) {
                usb.rx[usb.rx_len..usb.rx_len + count].copy_from_slice(&buf[..count]);
                usb.rx_len += count;
            }
        }
    });
}

/// Writes straight to UART0's registers: for the fault and panic handlers, which cannot borrow
/// the console. UART0 is configured before anything that can fault.
pub fn uart_write_raw(bytes: &[u8]) {
    // SAFETY: a read-modify-free use of UART0's data and flag registers; the main program is
    // stopped for good when this runs.
    let uart = unsafe { &*pac::UART0::ptr() };
    for &byte in bytes {
        while uart.uartfr().read().txff().bit_is_set() {}
        uart.uartdr().write(|w| unsafe { w.data().bits(byte) });
    }
}

/// `fmt::Write` over [`uart_write_raw`].
pub struct RawUart;

impl fmt::Write for RawUart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart_write_raw(s.as_bytes());
        Ok(())
    }
}
