package broker

// mochiReadBuffer is the size of the read buffer mochi gives every
// connection (its bufio.Reader, ClientNetReadBufferSize), which an idle
// connection holds too. mochi's default is 2 KiB; 1 KiB saves 1 KiB per
// connection and costs no throughput we could measure (64 B QoS 0 and 1,
// 4 KiB QoS 0): a read of a packet body at least as large as the buffer
// bypasses it, and a buffer of small packets still holds a dozen or more per
// read(2). 512 bytes cost about 10 % of the 64 B QoS 0 rate.
// TestIdleConnectionMemory holds the heap per idle connection to its budget.
const mochiReadBuffer = 1024
