import ArgumentParser
import CMicroHTTPD
#if canImport(Glibc)
import Glibc
#endif

/// The API benchmark's floor: libmicrohttpd with the agent's threading mode (one internal epoll
/// thread) answering every request at once with a fixed JSON body the size of the agent's
/// status answer — no routing, no auth, no async hop, no encoding. Prints `port N`, serves until
/// killed.
struct BareMHD: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bare-mhd", abstract: "Helper: a bare libmicrohttpd daemon (the API floor).", shouldDisplay: false)

    func run() throws {
        let notify = UnsafeMutablePointer<rte_mhd_connection_notify>.allocate(capacity: 1)
        notify.initialize(to: rte_mhd_connection_notify(handler: { _, _, _ in }, cls: nil))
        let handler: rte_mhd_access_handler = { _, connection, _, _, _, _, _, reqCls in
            // First call: headers only; answer on the second, as MHD expects.
            guard let reqCls else { return rte_mhd_no() }
            if reqCls.pointee == nil { reqCls.pointee = UnsafeMutableRawPointer(bitPattern: 1); return rte_mhd_yes() }
            let response = bareBody.withUnsafeBytes { rte_mhd_response_copy($0.count, $0.baseAddress) }
            MHD_add_response_header(response, "Content-Type", "application/json")
            let r = MHD_queue_response(connection, 200, response)
            MHD_destroy_response(response)
            return r
        }
        guard let daemon = rte_mhd_start("127.0.0.1", 0, 0, handler, nil, nil, 30, 256, 64, notify, "", "") else {
            throw BenchError("bare libmicrohttpd did not start")
        }
        print("port \(rte_mhd_bound_port(daemon))")
        fflush(nil)  // all streams: the parent reads the port line now
        while true { pause() }
    }
}

/// An answer of the agent's status size (~400 bytes of JSON).
let bareBody: [UInt8] = Array(#"{"backend":"simulated","board":"apu2","dut":"apu2-sim","power":"on","power_state_source":"power_led","queue_length":0,"serial":{"baud":115200,"bytes_read":123456,"bytes_written":789,"capture_end":123456,"capture_start":0,"device":"/tmp/rte-agent-sim/dut-serial","reopen_count":0,"state":"open"},"uptime_s":12.345,"version":"0.1.0"}"#.utf8)
