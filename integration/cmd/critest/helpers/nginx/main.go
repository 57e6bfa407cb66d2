// Command nginx stands in for nginx in critest's images: run as
// /usr/sbin/nginx (so its process name is nginx, as pidof sees it), it
// renames its command line as nginx's master process does, writes
// /var/run/nginx.pid, and serves /www over HTTP on the port it is given.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const title = "nginx: master process nginx -g daemon off;"

func main() {
	if !strings.HasPrefix(os.Args[0], "nginx: ") {
		// /proc/PID/cmdline shows argv: exec again under nginx's title.
		args := append([]string{title}, os.Args[1:]...)
		if err := syscall.Exec("/proc/self/exe", args, os.Environ()); err != nil {
			fmt.Fprintln(os.Stderr, "nginx:", err)
			os.Exit(1)
		}
	}
	port := "80"
	if len(os.Args) > 2 && os.Args[1] == "-p" {
		port = os.Args[2]
	}
	if err := os.MkdirAll("/var/run", 0o755); err == nil {
		_ = os.WriteFile("/var/run/nginx.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	}
	fmt.Println("httpd serving on port " + port)
	if err := http.ListenAndServe(":"+port, http.FileServer(http.Dir("/www"))); err != nil {
		fmt.Fprintln(os.Stderr, "nginx:", err)
		os.Exit(1)
	}
}
