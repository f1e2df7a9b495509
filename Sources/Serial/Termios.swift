import POSIXIO
import Configuration
#if canImport(Glibc)
import Glibc
#endif

/// The one place termios is touched: open a UART (or pty) raw, at a given speed and framing.
public enum Termios {
    static func speedConstant(_ baud: Int) -> speed_t? {
        switch baud {
        case 50: return speed_t(B50); case 75: return speed_t(B75); case 110: return speed_t(B110)
        case 134: return speed_t(B134); case 150: return speed_t(B150); case 200: return speed_t(B200)
        case 300: return speed_t(B300); case 600: return speed_t(B600); case 1200: return speed_t(B1200)
        case 1800: return speed_t(B1800); case 2400: return speed_t(B2400); case 4800: return speed_t(B4800)
        case 9600: return speed_t(B9600); case 19200: return speed_t(B19200); case 38400: return speed_t(B38400)
        case 57600: return speed_t(B57600); case 115200: return speed_t(B115200); case 230400: return speed_t(B230400)
        case 460800: return speed_t(B460800); case 500000: return speed_t(B500000); case 576000: return speed_t(B576000)
        case 921600: return speed_t(B921600); case 1000000: return speed_t(B1000000); case 1152000: return speed_t(B1152000)
        case 1500000: return speed_t(B1500000); case 2000000: return speed_t(B2000000); case 2500000: return speed_t(B2500000)
        case 3000000: return speed_t(B3000000); case 3500000: return speed_t(B3500000); case 4000000: return speed_t(B4000000)
        default: return nil
        }
    }

    /// Opens `config.device` non-blocking, exclusive (TIOCEXCL) and raw with the configured framing.
    public static func open(_ config: SerialConfig) throws(Errno) -> FileDescriptor {
        let fd = try FileDescriptor.open(config.device, [.readWrite, .noControllingTerminal, .nonBlocking])
        do throws(Errno) {
            if config.exclusive && ioctl(fd.rawValue, UInt(TIOCEXCL)) != 0 { throw Errno.current }
            try configure(fd, config)
        } catch {
            fd.close(); throw error
        }
        return fd
    }

    public static func configure(_ fd: FileDescriptor, _ config: SerialConfig) throws(Errno) {
        var t = termios()
        if tcgetattr(fd.rawValue, &t) != 0 { throw Errno.current }
        cfmakeraw(&t)
        guard let speed = speedConstant(config.baud) else { throw Errno(EINVAL) }
        cfsetispeed(&t, speed)
        cfsetospeed(&t, speed)
        t.c_cflag &= ~(tcflag_t(CSIZE) | tcflag_t(PARENB) | tcflag_t(PARODD) | tcflag_t(CSTOPB) | tcflag_t(CRTSCTS))
        switch config.dataBits {
        case 5: t.c_cflag |= tcflag_t(CS5)
        case 6: t.c_cflag |= tcflag_t(CS6)
        case 7: t.c_cflag |= tcflag_t(CS7)
        default: t.c_cflag |= tcflag_t(CS8)
        }
        switch config.parity {
        case .none: break
        case .even: t.c_cflag |= tcflag_t(PARENB)
        case .odd: t.c_cflag |= tcflag_t(PARENB | PARODD)
        }
        if config.stopBits == 2 { t.c_cflag |= tcflag_t(CSTOPB) }
        t.c_cflag |= tcflag_t(CLOCAL | CREAD)
        t.c_iflag &= ~tcflag_t(IXON | IXOFF | IXANY)
        switch config.flowControl {
        case .none: break
        case .rtscts: t.c_cflag |= tcflag_t(CRTSCTS)
        case .xonxoff: t.c_iflag |= tcflag_t(IXON | IXOFF)
        }
        // VMIN=1/VTIME=0: a read returns as soon as one byte is there (we poll anyway).
        withUnsafeMutableBytes(of: &t.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        if tcsetattr(fd.rawValue, TCSANOW, &t) != 0 { throw Errno.current }
    }

    /// Reads the speed back, to show that the settings took.
    public static func currentBaud(_ fd: FileDescriptor) throws(Errno) -> speed_t {
        var t = termios()
        if tcgetattr(fd.rawValue, &t) != 0 { throw Errno.current }
        return cfgetospeed(&t)
    }

    /// True when the termios of `fd` is raw 8N1 as configured (for tests and `status`).
    public static func isRaw(_ fd: FileDescriptor) -> Bool {
        var t = termios()
        guard tcgetattr(fd.rawValue, &t) == 0 else { return false }
        return t.c_lflag & tcflag_t(ICANON | ECHO | ISIG) == 0 && t.c_oflag & tcflag_t(OPOST) == 0
    }
}
