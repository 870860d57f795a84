package chattemplate

import (
	"fmt"
	"strings"
	"time"
)

// strftime formats t like Python's datetime.strftime in the C locale (the
// glibc directives chat templates use, including the "%-d" no-padding
// flag). The engine's built-in knows only a few directives and substitutes
// them textually, so it would corrupt e.g. "%%Y".
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 >= len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		pad := true
		if format[i] == '-' && i+1 < len(format) {
			pad = false
			i++
		}
		directive(&b, t, format[i], pad)
	}
	return b.String()
}

// directive writes strftime's %<verb> (%-<verb> when pad is false) of t.
func directive(b *strings.Builder, t time.Time, verb byte, pad bool) {
	num := func(n, width int) {
		if pad {
			fmt.Fprintf(b, "%0*d", width, n)
		} else {
			fmt.Fprintf(b, "%d", n)
		}
	}
	hour12 := t.Hour() % 12
	if hour12 == 0 {
		hour12 = 12
	}
	switch verb {
	case 'Y':
		fmt.Fprintf(b, "%d", t.Year())
	case 'y':
		num(t.Year()%100, 2)
	case 'm':
		num(int(t.Month()), 2)
	case 'd':
		num(t.Day(), 2)
	case 'e':
		fmt.Fprintf(b, "%2d", t.Day())
	case 'H':
		num(t.Hour(), 2)
	case 'I':
		num(hour12, 2)
	case 'M':
		num(t.Minute(), 2)
	case 'S':
		num(t.Second(), 2)
	case 'f':
		fmt.Fprintf(b, "%06d", t.Nanosecond()/1000)
	case 'j':
		num(t.YearDay(), 3)
	case 'p':
		if t.Hour() < 12 {
			b.WriteString("AM")
		} else {
			b.WriteString("PM")
		}
	case 'b', 'h':
		b.WriteString(t.Month().String()[:3])
	case 'B':
		b.WriteString(t.Month().String())
	case 'a':
		b.WriteString(t.Weekday().String()[:3])
	case 'A':
		b.WriteString(t.Weekday().String())
	case 'w':
		fmt.Fprintf(b, "%d", int(t.Weekday()))
	case 'u':
		fmt.Fprintf(b, "%d", (int(t.Weekday())+6)%7+1)
	case 'F':
		fmt.Fprintf(b, "%d-%02d-%02d", t.Year(), int(t.Month()), t.Day())
	case 'T':
		fmt.Fprintf(b, "%02d:%02d:%02d", t.Hour(), t.Minute(), t.Second())
	case 'D':
		fmt.Fprintf(b, "%02d/%02d/%02d", int(t.Month()), t.Day(), t.Year()%100)
	case 'Z':
		name, _ := t.Zone()
		b.WriteString(name)
	case 'z':
		b.WriteString(t.Format("-0700"))
	case '%':
		b.WriteByte('%')
	default:
		// Unknown directives pass through, as glibc does.
		b.WriteByte('%')
		if !pad {
			b.WriteByte('-')
		}
		b.WriteByte(verb)
	}
}
